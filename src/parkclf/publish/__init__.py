"""Publishing: the model card, the Hub upload and the Space deploy."""
