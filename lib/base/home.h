/* home: $FI_HOME, where the model store and the KV arenas live, and whether it can be trusted.
 *
 * Every process that reads a model image or a KV block from it trusts whoever can write it: a
 * planted image runs as the user's model, a planted arena feeds them KV. So, as ssh's
 * StrictModes does for ~/.ssh, a directory is used only when no one else can write it:
 *   private  owned by this user (or root) and writable by no one else (group or others);
 *   group    setgid, owned by any user, of a group this process is in, writable by that
 *            group and not by others (mode 2770): users who share models and KV on purpose.
 * Anything else (world-writable, another user's, a group's without setgid or of a group this
 * process is not in) is refused with a message saying why and what to do.
 *
 * FI_HOME defaults to /dev/shm/fi-UID (a tmpfs, so images and KV are memory every process
 * maps without a copy; one per user, so a second user on the host is never locked out).
 * Directories fi creates in it are 0700, or 2770 inside a group directory, where files are
 * made group-readable and writable too. */
#ifndef FI_HOME_H
#define FI_HOME_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* $FI_HOME if set and non-empty, else /dev/shm/fi-UID (the effective user id). */
const char *fi_home(void);

/* Checks directory path as described above: FI_OK (*group set when it is a group directory;
 * group may be NULL), FI_ENOTFOUND when absent, FI_EINVAL (with the reason) when it must not
 * be trusted, FI_EIO when it cannot be examined. */
fi_err fi_dir_trusted(const char *path, int *group);

/* mkdir -p for fi's own directories: the missing ones under an existing ancestor are made
 * 0700 (2770 under a group directory), then path is checked with fi_dir_trusted. */
fi_err fi_dir_make(const char *path, int *group);

/* The mode for files fi creates in a directory: 0600, or 0660 in a group directory. */
mode_t fi_file_mode(int group);

#endif
