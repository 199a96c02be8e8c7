/*
 * ctl_templates: GET /templates and GET /templates/{id}, answered from the loaded configuration
 * (config/templates/ (one YAML per template)): image, resource floors and the apps a workspace of
 * that template publishes. Public (no API key). Also the JSON writer other modules use to describe
 * a template's expected apps.
 */
#ifndef RB_CONTROL_TEMPLATES_H
#define RB_CONTROL_TEMPLATES_H

#include "common/json.h"
#include "control/api.h"

/** GET /templates → {"items":[template…],"next_cursor":null}. */
void ctl_templates_list(ctl_req_t *r);
/** GET /templates/{id} → template, or 404 template_not_found. */
void ctl_templates_get(ctl_req_t *r);
/** Writes one template object. */
void ctl_templates_write(rb_jw_t *w, const cfg_template_t *t);
/** Writes the template's apps as a JSON array (name, port, visibility, protocol). */
void ctl_templates_write_apps(rb_jw_t *w, const cfg_template_t *t);

#endif
