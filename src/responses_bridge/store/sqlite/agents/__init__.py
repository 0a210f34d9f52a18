"""The Agents API's records, session events and automations' scheduler on SQLite, and their tables.
"""
