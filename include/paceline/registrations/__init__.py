"""Registration syncs (RunSignUp, Haku): planning shared by both, and one module per provider."""
