"""The demo world's classes: the Cityscapes trainIds its scenes use, and void.

Anomalies are void (255) in the trainIds; the toy models predict the 19 Cityscapes
classes (ERFNet has a 20th, void, output channel). Imports nothing.
"""

# Cityscapes trainIds used by the world.
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 5, 8, 10, 11, 13
VOID = 255
NUM_CLASSES = 19  # Cityscapes trainIds 0..18; ERFNet has a 20th (void) output channel
WORLD_CLASSES = (ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR)
