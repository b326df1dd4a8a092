"""LiverPlan application core (no Qt). See ../shared/DESIGN.md for the layering rules."""
