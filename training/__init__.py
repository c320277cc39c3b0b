"""mfapr_training: offline training for mfapr_ros (installed as `mfapr_training` from the training/ folder).

Depends on `mfapr_ros` (models, geometry, rig, preprocess, sync, checkpoint); `mfapr_ros` never imports this
package, so the node's import path stays free of training-only dependencies.
"""
