"""sla-stream: measures room-entry success against the TRTC SLA, slot by slot."""
