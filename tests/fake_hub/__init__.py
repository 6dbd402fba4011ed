"""A local Hugging Face Hub stand-in that the real huggingface_hub client talks to; see README.md."""
