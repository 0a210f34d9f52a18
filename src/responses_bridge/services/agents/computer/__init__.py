"""The agent tool ``computer_use``: the sessions' desktops (desktops.py) and the model's computer calls performed
on them (calls.py)."""
