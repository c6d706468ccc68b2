"""Reading data sets (``load_records``): JSONL, JSON, CSV, Parquet and Arrow files, directories
of them and Hugging Face data sets, in the chat, prompt/completion, Alpaca, ShareGPT and text
record formats; ``render_example`` for text records (loss on every token)."""
