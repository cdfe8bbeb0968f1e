"""Identity: the registry, person keys, intake, the journal, the audit chain, crash safety."""
