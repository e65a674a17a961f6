"""Statements: one service month of one app, slot by slot, in forms a customer can audit.

A statement is a month's figures (:class:`stream.sla.assessment.MonthAssessment`)
together with every slot that had traffic, each judged by the one judge
(:func:`stream.sla.judge.judge`), and a SHA-256 digest of that slot listing
(:mod:`stream.statements.digest`). The offline report, the replay and the live
worker all build their statements with :func:`stream.statements.statement.build_statement`,
so for the same events they print the same figures and the same digest.

Forms: JSON and text (``report``/``replay --format``), a slot CSV
(:mod:`stream.statements.slot_csv`) and a self-contained HTML month page
(:mod:`stream.statements.month_page`), written to files or served live.
"""
