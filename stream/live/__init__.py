"""The live worker's parts that keep it exact under faults.

``health`` (Redis outages, the worker's state), ``namespace`` (the marker and
its generation, refusing a lost state), ``cursors`` (positions from Redis),
``faust_positions`` and ``faust_isolation`` (the Faust internals they need,
pinned), ``rebuild`` (recounting a lost state from the topics).
"""
