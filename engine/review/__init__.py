"""Review aids: errors against a reference (errors.py), the model's uncertainty (uncertainty.py), and the
state the window's overlays show (state.py). No Qt."""
