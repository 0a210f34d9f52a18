"""What holds state, one folder per capability: ``responses/``, ``tools/``, ``files/``, ``containers/``, ``agents/``
and ``tenancy/``; the modules at this root (pagination, readiness, write-behind) are shared by them and import
none of them.

May import the settings, the run, the engine, the sandbox, the store, protocol and the rooms below; never the
runtime, a door or a command. The capabilities' own arrows: tests/unit/test_import_direction.py's MAY_IMPORT.
"""
