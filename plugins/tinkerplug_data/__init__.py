"""Reading data sets: chat JSONL files (``load_records``)."""
