"""`python -m earmark.cli`, as the console script `earmark`."""

from earmark.cli.main import app

app()
