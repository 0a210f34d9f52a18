"""The server-side tools the run drives over a container: the code interpreter and the hosted shell.

May use containers, files and tenancy.
"""
