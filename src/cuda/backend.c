/* The table libcmamba-cuda.so exports (cuda/backend.h). */
#include "cuda/backend.h"

__attribute__((visibility("default"))) const cm_cuda_backend cm_cuda_backend_v1 = {
    .available = cm_cuda_available,
    .model_new = cm_cuda_model_new,
    .model_free = cm_cuda_model_free,
    .model_step_bytes = cm_cuda_model_step_bytes,
    .model_describe = cm_cuda_model_describe,
    .state_new = cm_cuda_state_new,
    .state_free = cm_cuda_state_free,
    .state_reset = cm_cuda_state_reset,
    .state_copy = cm_cuda_state_copy,
    .state_get = cm_cuda_state_get,
    .state_set = cm_cuda_state_set,
    .forward = cm_cuda_forward,
    .step_batch = cm_cuda_step_batch,
    .copy_bandwidth = cm_cuda_copy_bandwidth,
    .train_new = cm_cuda_train_new,
    .train_free = cm_cuda_train_free,
    .train_describe = cm_cuda_train_describe,
    .train_copy = cm_cuda_train_copy,
    .train_zero_grad = cm_cuda_train_zero_grad,
    .train_set_hook = cm_cuda_train_set_hook,
    .train_run = cm_cuda_train_run,
    .train_adamw = cm_cuda_train_adamw,
};
