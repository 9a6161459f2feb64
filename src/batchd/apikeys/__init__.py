"""API keys kept in the database (``batchd keys``): secrets, the live directory every
process reads them from, and the admin operations behind the CLI."""
