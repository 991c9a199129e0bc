/* home: $FI_HOME and the trust checks of fi's directories (base/home.h). */
#include "home.h"
#include "settings.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *fi_home(void)
{
	return fi_settings()->home;
}

static int in_group(gid_t gid)
{
	gid_t g[256];
	int n = getgroups(256, g);
	if (gid == getegid())
		return 1;
	for (int i = 0; i < n; i++)
		if (g[i] == gid)
			return 1;
	return 0;
}

/* 1 when user uid belongs to group gid (primary or listed), so it may own a group directory. */
static int member(uid_t uid, gid_t gid)
{
	char buf[16384];
	struct passwd pw, *pp = NULL;
	struct group gr, *gp = NULL;
	if (!getpwuid_r(uid, &pw, buf, sizeof buf, &pp) && pp && pp->pw_gid == gid)
		return 1;
	if (!pp || getgrgid_r(gid, &gr, buf, sizeof buf, &gp) || !gp)
		return 0;
	for (char **m = gp->gr_mem; *m; m++)
		if (!strcmp(*m, pp->pw_name))
			return 1;
	return 0;
}

fi_err fi_dir_trusted(const char *path, int *group)
{
	struct stat st;
	uid_t me = geteuid();
	unsigned mode;
	if (group)
		*group = 0;
	if (stat(path, &st))
		return errno == ENOENT ? fi_fail(FI_ENOTFOUND, "'%s' does not exist", path)
				       : fi_fail(FI_EIO, "cannot examine '%s': %s", path, strerror(errno));
	mode = (unsigned)st.st_mode & 07777;
	if (!S_ISDIR(st.st_mode))
		return fi_fail(FI_EINVAL, "'%s' is not a directory", path);
	if (st.st_mode & S_IWOTH)
		return fi_fail(FI_EINVAL, "'%s' is writable by every user (mode %04o): anyone could "
			       "plant models or KV in it; refusing it (chmod o-w it, or set FI_HOME "
			       "to a directory of your own)", path, mode);
	if ((st.st_mode & S_ISGID) && (st.st_mode & S_IWGRP)) {
		if (!in_group(st.st_gid))
			return fi_fail(FI_EINVAL, "'%s' is a group directory of group %u, which this "
				       "user is not in; refusing it", path, (unsigned)st.st_gid);
		if (st.st_uid != me && st.st_uid != 0 && !member(st.st_uid, st.st_gid))
			return fi_fail(FI_EINVAL, "'%s' is a group directory owned by user %u, who is "
				       "not in its group %u; refusing it", path, (unsigned)st.st_uid,
				       (unsigned)st.st_gid);
		if (group)
			*group = 1;
		return FI_OK;
	}
	if (st.st_uid != me && st.st_uid != 0)
		return fi_fail(FI_EINVAL, "'%s' belongs to user %u: they could plant models or KV in "
			       "it; refusing it (set FI_HOME to a directory of your own, or share "
			       "one as a group directory, mode 2770: see fi(7))", path,
			       (unsigned)st.st_uid);
	if (st.st_mode & S_IWGRP)
		return fi_fail(FI_EINVAL, "'%s' is writable by its group (mode %04o) but is not a "
			       "group directory; refusing it (chmod g-w it, or chmod 2770 it to share "
			       "it with the group: see fi(7))", path, mode);
	return FI_OK;
}

fi_err fi_dir_make(const char *path, int *group)
{
	char p[PATH_MAX];
	size_t n = strlen(path);
	int parent_group = 0;
	if (!n || n >= sizeof p)
		return fi_fail(FI_ERANGE, "directory name '%.64s' is empty or too long", path);
	memcpy(p, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		struct stat st;
		if (p[i] != '/' && p[i] != 0)
			continue;
		p[i] = 0;
		if (!stat(p, &st)) {
			parent_group = S_ISDIR(st.st_mode) && (st.st_mode & S_ISGID) &&
				       (st.st_mode & S_IWGRP);
		} else if (mkdir(p, parent_group ? 02770 : 0700) && errno != EEXIST) {
			return fi_fail(FI_EIO, "cannot create '%s': %s", p, strerror(errno));
		} else if (parent_group && chmod(p, 02770)) {
			/* the umask took the group's bits: the directory is the group's */
			return fi_fail(FI_EIO, "cannot share '%s' with its group: %s", p,
				       strerror(errno));
		}
		p[i] = i < n ? '/' : 0;
	}
	return fi_dir_trusted(path, group);
}

mode_t fi_file_mode(int group)
{
	return group ? 0660 : 0600;
}
