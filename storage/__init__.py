"""PostgreSQL storage: the adopted gmail_tokens table, migrations, repositories and token encryption."""
