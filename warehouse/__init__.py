"""Data access: the only package that talks to PostgreSQL (asyncpg), plus the synthetic data generator."""
