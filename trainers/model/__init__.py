"""What a model is and how it is built: architecture, the YOLO26 stage layout, build, heads, SE budget."""
