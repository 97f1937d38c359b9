"""`karmchari`: the command line for Karmchari's REST API."""
