/* runtime/transfer.c — copying weights and optimizer state between two
 * compiled programs by name (include/kiln/program.h, kiln_program_copy).
 *
 * Progressive resizing recompiles the same model for a larger input and
 * carries on from where the smaller one stopped: every parameter, named
 * constant and (optionally) optimizer or running-statistics state that both
 * programs hold under the same name, dtype and shape is copied. A tensor
 * both hold whose dtype or shape differs is an error naming it (a silent
 * skip would restart that layer from scratch); tensors only one side holds
 * are left alone and counted. Every check runs before any byte is copied,
 * so a failure leaves dst as it was. */
#include "kiln/kiln.h"
#include "ir/util.h"

#include <stdlib.h>
#include <string.h>

/* Parameters, named constants and the model's own state (batchnorm's running
 * statistics) always; optimizer state with with_state. */
static bool copied(const kiln_tensor_info *t, int with_state)
{
    return t->role == KILN_ROLE_PARAM || t->role == KILN_ROLE_CONST || t->model_state ||
           (with_state && t->role == KILN_ROLE_STATE);
}

static bool same_type(const kiln_tensor_info *a, const kiln_tensor_info *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank) return false;
    for (int d = 0; d < a->rank; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

static void type_str(const kiln_tensor_info *t, char *buf, size_t n)
{
    size_t len = (size_t)snprintf(buf, n, "%s[", kiln_dtype_name(t->dtype));
    for (int d = 0; d < t->rank && len < n; d++)
        len += (size_t)snprintf(buf + len, n - len, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

kiln_status kiln_program_copy(kiln_program *dst, kiln_program *src, int with_state,
                              kiln_copy_report *report, char **err)
{
    if (err) *err = NULL;
    kiln_copy_report r = {0};
    if (!dst || !src) {
        if (err) *err = kiln_asprintf("kiln_program_copy: no program given");
        return KILN_ERR_INVALID;
    }
    int n = kiln_program_num_tensors(dst);
    /* pass 0 checks everything, pass 1 copies */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            kiln_tensor_info di, si;
            if (kiln_program_tensor(dst, i, &di) || !copied(&di, with_state)) continue;
            void *from = kiln_program_data(src, di.name, &si);
            if (!from || !copied(&si, with_state)) {
                if (pass == 0) r.only_dst++;
                continue;
            }
            if (!same_type(&di, &si)) {
                char a[128], b[128];
                type_str(&di, a, sizeof a);
                type_str(&si, b, sizeof b);
                if (err)
                    *err = kiln_asprintf("kiln_program_copy: '%s' is %s in the source program "
                                         "but %s in the destination; the two programs must "
                                         "hold it with the same shape (a layer whose size "
                                         "depends on the input size needs adaptive pooling "
                                         "before it)", di.name, b, a);
                return KILN_ERR_SHAPE;
            }
            if (pass == 1) {
                memcpy(kiln_program_data(dst, di.name, NULL), from, di.bytes);
                r.copied++;
                r.bytes += di.bytes;
            }
        }
    }
    int ns = kiln_program_num_tensors(src);
    for (int i = 0; i < ns; i++) {
        kiln_tensor_info si, di;
        if (kiln_program_tensor(src, i, &si) || !copied(&si, with_state)) continue;
        if (!kiln_program_data(dst, si.name, &di) || !copied(&di, with_state)) r.only_src++;
    }
    if (report) *report = r;
    return KILN_OK;
}
