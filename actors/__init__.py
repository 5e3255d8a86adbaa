"""The email domain built on the runtime: schemas, actors, edges and the three services."""
