"""Semi-automatic review and correction tools (no Qt): plain functions returning engine.edits.Region,
applied as one step through engine.case_session.CaseSession.commit."""
