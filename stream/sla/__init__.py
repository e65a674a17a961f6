"""The SLA rules as pure functions: no I/O, no clocks, no globals (docs/design.md, invariant 5).

Each module holds one rule of the agreement as docs/sla.md reads it:
``counting`` (§1), ``slots`` (§2 alignment), ``verdict`` (§1–§2 per slot),
``months`` (§3), ``availability`` (§4), ``compensation`` (§5), ``claims``
(§6), ``exemptions`` (§7); ``judge`` judges one slot in full (verdict, then
exemption), ``assessment`` combines them into every figure of one app's
service month, and ``policy`` holds the agreement's numbers.
"""
