"""Where images come from: CelebA's layouts, any image folder, the procedural synthetic faces.
Each source lists items and reads one item's bytes; base.py says what an item is."""
