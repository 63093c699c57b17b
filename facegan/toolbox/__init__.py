"""What is done with a trained generator beyond sampling: projecting a real face into its latent
space (projection.py) and editing faces along attribute directions found with the attribute
classifier (directions.py). Pure torch on any device; the commands are facegan.project and
facegan.edit."""
