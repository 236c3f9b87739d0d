"""Dataset readers and codecs: raw benchmark layouts -> masks, expressions (and later, records)."""
