"""parkclf: fine-tune, export, serve and call an image classifier built from a folder of photos.

Importing the package imports nothing heavy: serving an exported checkpoint needs neither torch nor transformers.
"""

__version__ = "0.3.0"
