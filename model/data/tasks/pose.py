"""Human pose from COCO person_keypoints: user [image, instruction], assistant [image_gen skeletons of
every labelled person, drawn with the fixed COCO colours of ``render.pose``]. Keypoints are mapped
through the same square fit as the image; those falling outside the crop are dropped (v = 0)."""
from __future__ import annotations

import numpy as np

from unigen.model.data import fields as F
from unigen.model.data.render import pose as pose_r
from unigen.model.data.tasks.base import TaskAdapter, assistant, image, image_gen, require, text, user


class Pose(TaskAdapter):
    task = "pose"
    default_fields = {"image": "image;file_name", "persons": "persons"}
    templates = ("Estimate the human pose in this image.", "Draw the skeleton of every person in this picture.",
                 "Generate the keypoint skeletons of the people in this image.")

    def convert(self, record, ctx):
        rgb = self.image(record, "image", ctx)
        inp, fit = self.fit(rgb)
        people = self.people(record, fit)
        require(any((p[:, 2] > 0).any() for p in people), "no labelled keypoint inside the crop")
        target = pose_r.draw(people, self.image_size)
        return [user(image(inp), text(self.instruction(ctx))), assistant(image_gen(target))]

    def people(self, record, fit) -> list[np.ndarray]:
        """Each person's 17 x 3 (x, y, v) in target pixels: keypoints mapped through the image's square fit,
        those outside the crop unlabelled (v = 0). What the target draws, and what pose PCK scores against."""
        people = []
        persons = F.lookup(record, self.fields["persons"])
        require(isinstance(persons, list), "persons: expected a list of annotations")
        for p, person in enumerate(persons):
            require(isinstance(person, dict), f"person {p}: expected an object with keypoints")
            kps = np.asarray(F.as_number_list(person.get("keypoints"), f"person {p} keypoints", 51)).reshape(17, 3)
            xy = fit.points(kps[:, :2])
            v = kps[:, 2].copy()
            inside = (xy[:, 0] >= 0) & (xy[:, 0] < self.image_size) & (xy[:, 1] >= 0) & (xy[:, 1] < self.image_size)
            v[~inside] = 0
            people.append(np.concatenate([xy, v[:, None]], axis=1))
        return people
