"""Held-out loss: mean NLL per trained token and bits per byte, by ``forward`` on the training
client (``evaluate``; ``[nll]``)."""
