"""Wire schemas: the pydantic request and response bodies of the HTTP API (OpenAPI's
components). ``common`` holds records, persons, jobs, admin and errors; ``extract``,
``lifecycle`` (linkage-model training and promotion) and ``review`` their own routes' bodies.
Not to be confused with linkage models (``mpi/linkage``, ``linkage_models/``)."""
