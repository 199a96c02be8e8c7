#include "control/templates.h"

void ctl_templates_write_apps(rb_jw_t *w, const cfg_template_t *t)
{
    rb_jw_arr_begin(w);
    for (size_t i = 0; i < t->apps_len; i++) {
        const cfg_app_t *a = &t->apps[i];
        rb_jw_obj_begin(w);
        rb_jw_kstr(w, "name", a->name);
        rb_jw_kint64(w, "port", a->port);
        rb_jw_kstr(w, "visibility", cfg_visibility_name(a->visibility));
        rb_jw_kstr(w, "protocol", cfg_protocol_name(a->protocol));
        rb_jw_obj_end(w);
    }
    rb_jw_arr_end(w);
}

void ctl_templates_write(rb_jw_t *w, const cfg_template_t *t)
{
    rb_jw_obj_begin(w);
    rb_jw_kstr(w, "id", t->id);
    rb_jw_kstr(w, "name", t->name != NULL ? t->name : t->id);
    rb_jw_kstr(w, "description", t->description != NULL ? t->description : "");
    rb_jw_kstr(w, "image", t->image_name);
    rb_jw_kstr(w, "egress", t->egress == CFG_EGRESS_NONE ? "none" : "all");
    rb_jw_key(w, "floors");
    rb_jw_obj_begin(w);
    rb_jw_kint64(w, "vcpu_count", t->floor_vcpu);
    rb_jw_kint64(w, "ram_mb", t->floor_ram_mb);
    rb_jw_kint64(w, "disk_size_mb", t->floor_disk_mb);
    rb_jw_obj_end(w);
    rb_jw_key(w, "expected_apps");
    ctl_templates_write_apps(w, t);
    rb_jw_obj_end(w);
}

void ctl_templates_list(ctl_req_t *r)
{
    const cfg_t *cfg = r->app->cfg;
    rb_buf_t b;
    rb_jw_t w;

    ctl_list_begin(&w, &b);
    for (size_t i = 0; i < cfg->templates_len; i++)
        ctl_templates_write(&w, &cfg->templates[i]);
    ctl_list_end(r, &w, &b, NULL);
}

void ctl_templates_get(ctl_req_t *r)
{
    const cfg_template_t *t = cfg_template_find(r->app->cfg, r->params[0]);
    rb_buf_t b;
    rb_jw_t w;

    if (t == NULL) {
        ctl_error(r, 404, "template_not_found", "no such template", NULL);
        return;
    }
    rb_buf_init(&b, 0);
    rb_jw_init(&w, &b);
    ctl_templates_write(&w, t);
    ctl_reply(r, 200, &b);
    rb_buf_free(&b);
}
