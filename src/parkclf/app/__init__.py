"""The Gradio app: the page, its API endpoints and the launch settings. Imports no torch."""
