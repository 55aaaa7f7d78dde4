"""Industrial visual inspection."""
