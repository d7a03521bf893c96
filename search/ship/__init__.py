"""What turns a trial into a deliverable: the model card (export, retrain and pick are commands over it)."""
