"""LiverPlan application core (no Qt). The parts and the layering rule: docs/architecture.md."""
