"""RunSignUp: hook (Airflow connection type ``runsignup``), client and record models."""

from paceline.providers.runsignup.hook import RunSignUpHook

__all__ = ["RunSignUpHook"]
