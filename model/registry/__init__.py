"""Registry: the S3 store of versions, lineage, the model card, champion scoring, import."""
