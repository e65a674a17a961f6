"""Tools around the stream: simulated traffic (``simulate``) and a producer that sends it (``producer``), the
topic plan (``topics``) and the live terminal view (``watch``)."""
