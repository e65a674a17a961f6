"""The SLA rules as pure functions: no I/O, no clocks, no globals (DESIGN.md invariant 5).

Each module holds one rule of SLA-SPEC.md: ``slots`` (§2 alignment), ``verdict``
(§1–§2 per slot), ``months`` (§3), ``availability`` (§4), ``compensation`` and
``claims`` (§5), ``exemptions`` (§6); ``assessment`` combines them into every
figure of one app's service month; ``policy`` holds the agreement's numbers.
"""
