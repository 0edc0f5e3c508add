"""Fixed, documented encodings that turn dense targets into RGB images, each with its inverse.

| target       | encoding (forward)                                              | inverse tolerance          |
|--------------|-----------------------------------------------------------------|----------------------------|
| depth        | gray; log (default) or linear over [d_min, d_max] m; near=255,  | log: 1.4 % relative        |
|              | far=1, 0 = invalid (no measurement)                             | (0.1-100 m); linear: range/508 |
| normal       | RGB = (n + 1) / 2 * 255, OpenGL camera frame (x right, y up,    | < 1 degree                 |
|              | z toward the viewer); invalid = black                           |                            |
| pose         | COCO 17 keypoints, black canvas, limbs in fixed colours, joints | < 1 px (separated joints)  |
|              | as discs in 17 fixed colours (hue k/17)                         |                            |
| segmentation | PASCAL VOC colour map over class ids (any label set)            | exact                      |
| grounding    | the input image with the box outlined in magenta (255, 0, 255)  | <= 1 px                    |

All renderers work at the final target size: the caller maps values/points through
``geometry.SquareFit`` first, so nothing is resampled after drawing.
"""
