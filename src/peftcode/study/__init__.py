"""The study's definition: a config checked and resolved into cells, each job's typed settings, the
registries of kinds and families."""
