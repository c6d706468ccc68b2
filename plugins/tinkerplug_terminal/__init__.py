"""What the user sees in the terminal while a run goes: a first-party plugin, so it can be
replaced (``-p no:terminal`` and a plugin of your own) or quieted (``[terminal] quiet``, ``-q``)."""
