"""Data: FER2013 from its sources and archives, the dataset index and cache, cleaning."""
