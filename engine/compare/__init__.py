"""Two time points of one patient (issue 22): register the follow-up onto the baseline inside the liver,
match the lesions, measure their change (volume, diameter, RECIST 1.1, volumetric), keep the vanished ones.

No Qt. ``Comparison`` (comparison.py) is the one object the CLI and the window drive; register.py holds
the registration, match.py the matching, recist.py the response criteria, synthetic.py follow-ups with a
known answer for tests and benchmarks.
"""
from .comparison import NOT_FOR_CLINICAL_USE, ChangeRow, Comparison
from .register import Registration, RegistrationRefused, register

__all__ = ["Comparison", "ChangeRow", "NOT_FOR_CLINICAL_USE", "Registration", "RegistrationRefused", "register"]
