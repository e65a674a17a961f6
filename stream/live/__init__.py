"""The live worker: Faust's consumer handing Kafka's records to Redis a batch at a time, the closer judging slots.

``app`` wires the parts to Faust and nothing else; ``worker`` starts one.
The path of a record: ``faust_batches`` (each partition's fetched batch,
taken from Faust's consumer whole) → ``partitions`` (the consumer's input
partitions, positioned from Redis) → ``ingest`` (parse, dead-letter, count one
partition's batch atomically) → ``store`` (the Redis layout and its Lua
steps). The path of a verdict: ``clock`` (stream time, idleness, watermark,
the due rule) → ``closer`` (judge, commit in batches, publish the outbox) →
``ledger`` (running service months); ``exemptions`` re-judges the slots an
exemption touches.

What keeps it exact under faults: ``health`` (Redis outages, the worker's
state), ``namespace`` (the marker and its generation, refusing a lost
state), ``cursors`` (positions from Redis), ``faust_batches``,
``faust_positions`` and ``faust_isolation`` (the Faust internals they need,
pinned), ``rebuild`` (recounting a lost state from the topics, with
``recount``: reading the topics again through the same ingest and closer,
which ``sla-stream replay`` uses too). See docs/design.md and
docs/reliability.md.
"""
