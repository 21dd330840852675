"""Call detail records: one per leg, written off the event loop, never lost (``writer.py``)."""
