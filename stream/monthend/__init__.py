"""Month-end work on the topics: ``sla-stream replay`` (the month counted again) and ``sla-stream exempt``."""
