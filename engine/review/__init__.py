"""Review and correction aids (no Qt): semi-automatic tools (plain functions returning engine.edits.Region,
applied as one step through engine.case_session.CaseSession.commit), errors against a reference
(errors.py), the model's uncertainty (uncertainty.py), and the state the window's overlays show (state.py)."""
