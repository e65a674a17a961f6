"""The offline report's counting at any size: event files in, distinct events per app and slot out.

``sla-stream report`` counts a month from JSON Lines files, which may hold
tens of millions of events. Keeping every event id in memory (as
:class:`stream.sla.counting.SlotTally` does) would need some 190 bytes an
event, so this package counts in bounded memory instead, exactly:

- :mod:`stream.offline.files`: which files ``--events`` names (files,
  directories, globs; ``.jsonl`` or ``.jsonl.gz``) and reading them in blocks
  of whole lines;
- :mod:`stream.offline.spill`: placed events written to disk by partition,
  and one partition's distinct events counted at a time;
- :mod:`stream.offline.counting`: the two together, in parallel processes,
  with progress: :func:`~stream.offline.counting.count_event_files`.

The rules stay where they are: what a valid event is (:mod:`stream.events`),
which slot it counts in (:mod:`stream.sla.counting`, :mod:`stream.sla.slots`).
docs/offline-report.md tells how it works and what it costs.
"""
