"""The Agents API's records, session events and automations' scheduler on PostgreSQL, and their tables.
"""
